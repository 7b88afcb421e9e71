// Development and test tooling only: loaded into the Cosmos DB emulator (@vercel/cosmosdb-server) with
// `node --require` by tools/emulators/cosmos.py. It never runs next to the hub in production.
//
// 1. Emulator fix: reading a missing item answers 500 (the handler dereferences the missing document);
//    real Cosmos DB answers 404 NotFound. The adapter expects 404, so the emulator is made to answer it.
// 2. TLS: when EXTHUB_COSMOS_TLS_CERT / EXTHUB_COSMOS_TLS_KEY are set, the emulator serves that certificate
//    (the development CA's 127.0.0.1 certificate) instead of its bundled one, which expired in 2021.
// 3. Fault injection, only when EXTHUB_COSMOS_FAULTS=1 (the contract tests' throttling and 5xx cases):
//    POST /_exthub/faults {"status": 429, "count": 3, "retryAfterMs": 20, "match": "/docs"} makes the next
//    `count` requests whose path contains `match` fail with `status` (429 with x-ms-retry-after-ms);
//    GET /_exthub/faults reports {"remaining", "served"}; DELETE clears.
"use strict";

const fs = require("fs");
const https = require("https");

const tlsCert = process.env.EXTHUB_COSMOS_TLS_CERT;
const tlsKey = process.env.EXTHUB_COSMOS_TLS_KEY;
if (tlsCert && tlsKey) {
  const createServer = https.createServer;
  https.createServer = function createServerWithDevCertificate(options, listener) {
    const merged = { ...(options || {}), cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey) };
    return createServer.call(this, merged, listener);
  };
}

const readDocument = require("@vercel/cosmosdb-server/lib/handler/read-document");
const partitionHeader = require("@vercel/cosmosdb-server/lib/utils/get-partition-from-header");

const originalReadDocument = readDocument.default;
readDocument.default = function readDocumentOr404(account, req, res, params) {
  const collection = account.database(params.dbId).collection(params.collId);
  if (collection.read()) {
    const header = partitionHeader.default(req);
    let partitionKey;
    try {
      partitionKey = partitionHeader.parsePartitionKey(header, params.docId);
    } catch (err) {
      partitionKey = undefined;
    }
    if (partitionKey !== undefined && !collection.document(params.docId, partitionKey).read()) {
      res.statusCode = 404;
      return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
    }
  }
  return originalReadDocument(account, req, res, params);
};

if (process.env.EXTHUB_COSMOS_FAULTS === "1") {
  const routes = require("@vercel/cosmosdb-server/lib/routes");
  const route = routes.default;
  const fault = { status: 0, remaining: 0, retryAfterMs: 0, match: "/dbs", served: 0 };

  const readBody = req =>
    new Promise((resolve, reject) => {
      const chunks = [];
      req.on("data", chunk => chunks.push(chunk));
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", reject);
    });

  const control = async (account, req, res) => {
    if (req.method === "POST") {
      const wanted = JSON.parse((await readBody(req)) || "{}");
      fault.status = Number(wanted.status) || 503;
      fault.remaining = Number(wanted.count) || 0;
      fault.retryAfterMs = Number(wanted.retryAfterMs) || 0;
      fault.match = typeof wanted.match === "string" ? wanted.match : "/dbs";
      fault.served = 0;
    } else if (req.method === "DELETE") {
      fault.remaining = 0;
    }
    res.statusCode = 200;
    return { remaining: fault.remaining, served: fault.served };
  };

  const injected = async (account, req, res) => {
    res.statusCode = fault.status;
    if (fault.status === 429) {
      res.setHeader("x-ms-retry-after-ms", String(fault.retryAfterMs));
      res.setHeader("x-ms-substatus", "3200");
      return { code: "TooManyRequests", message: "Request rate is large (injected by the test tooling)." };
    }
    return { code: "ServiceUnavailable", message: "Injected by the test tooling." };
  };

  routes.default = req => {
    const path = (req.url || "").split("?")[0];
    if (path === "/_exthub/faults") {
      return [{}, control];
    }
    if (fault.remaining > 0 && path.includes(fault.match)) {
      fault.remaining -= 1;
      fault.served += 1;
      return [{}, injected];
    }
    return route(req);
  };
}
