// Development and test tooling only: loaded into the Cosmos DB emulator (@vercel/cosmosdb-server) with
// `node --require` by tools/emulators/cosmos.py. It never runs next to the hub in production.
//
// 1. Emulator fixes, so the adapter sees what Cosmos DB answers: reading a missing item answers 500 (the
//    handler dereferences the missing document) and so do writes to a missing container; Cosmos DB answers
//    404, with substatus 1003 when the database or container does not exist.
//    Queries are parsed once per process instead of once per container (see below).
// 2. TLS: when EXTHUB_COSMOS_TLS_CERT / EXTHUB_COSMOS_TLS_KEY are set, the emulator serves that certificate
//    (the development CA's 127.0.0.1 certificate) instead of its bundled one, which expired in 2021.
// 3. Fault injection, only when EXTHUB_COSMOS_FAULTS=1 (the contract tests' throttling and 5xx cases):
//    POST /_exthub/faults {"status": 429, "count": 3, "retryAfterMs": 20, "match": "/docs"} makes the next
//    `count` requests whose path contains `match` fail with `status` (429 with x-ms-retry-after-ms);
//    GET /_exthub/faults reports {"remaining", "served"}; DELETE clears.
"use strict";

const fs = require("fs");
const https = require("https");
const path = require("path");

const tlsCert = process.env.EXTHUB_COSMOS_TLS_CERT;
const tlsKey = process.env.EXTHUB_COSMOS_TLS_KEY;
if (tlsCert && tlsKey) {
  const createServer = https.createServer;
  https.createServer = function createServerWithDevCertificate(options, listener) {
    const merged = { ...(options || {}), cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey) };
    return createServer.call(this, merged, listener);
  };
}

// Speed: keep connections open (the emulator answers `connection: close` unless asked, so every request
// would pay a new TLS handshake; Cosmos DB keeps connections alive).
const server = require("@vercel/cosmosdb-server");
const createHttpsServer = server.createHttpsServer;
server.createHttpsServer = opts => createHttpsServer({ keepAlive: true, ...(opts || {}) });

// Speed: the emulator parses every query afresh for each container (and twice for single-partition queries);
// its parser takes exponential time in the nesting depth of parentheses. Parsed queries are immutable, so one
// process-wide cache by query text serves every container.
const serverDir = path.dirname(require.resolve("@vercel/cosmosdb-server/package.json"));
const queryModule = require(require.resolve("@zeit/cosmosdb-query", { paths: [serverDir] }));
const parseQuery = queryModule.default;
const parsedQueries = new Map();
queryModule.default = sql => {
  let parsed = parsedQueries.get(sql);
  if (parsed === undefined) {
    parsed = parseQuery(sql);
    if (parsedQueries.size >= 5000) {
      parsedQueries.delete(parsedQueries.keys().next().value);
    }
    parsedQueries.set(sql, parsed);
  }
  return parsed;
};

const routes = require("@vercel/cosmosdb-server/lib/routes");
const partitionHeader = require("@vercel/cosmosdb-server/lib/utils/get-partition-from-header");

const notFound = (res, substatus, message) => {
  res.statusCode = 404;
  res.setHeader("x-ms-substatus", String(substatus));
  return { code: "NotFound", message };
};

// Item operations on a missing database or container answer 404 with substatus 1003 (owner resource does
// not exist), as Cosmos DB does; the emulator crashes (500) on several of them. A read of a missing item
// answers 404 (substatus 0).
const likeCosmos = handler => (account, req, res, params) => {
  const collection = account.database(params.dbId).collection(params.collId);
  if (!collection.read()) {
    return notFound(res, 1003, "Owner resource does not exist.");
  }
  if (req.method === "GET" && params.docId !== undefined) {
    let partitionKey;
    try {
      partitionKey = partitionHeader.parsePartitionKey(partitionHeader.default(req), params.docId);
    } catch (err) {
      partitionKey = undefined;
    }
    if (partitionKey !== undefined && !collection.document(params.docId, partitionKey).read()) {
      return notFound(res, 0, "Entity with the specified id does not exist in the system.");
    }
  }
  return handler(account, req, res, params);
};

const route = routes.default;
let fault = null;
if (process.env.EXTHUB_COSMOS_FAULTS === "1") {
  fault = { status: 0, remaining: 0, retryAfterMs: 0, match: "/dbs", served: 0 };
}

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
  if (fault !== null) {
    if (path === "/_exthub/faults") {
      return [{}, control];
    }
    if (fault.remaining > 0 && path.includes(fault.match)) {
      fault.remaining -= 1;
      fault.served += 1;
      return [{}, injected];
    }
  }
  const found = route(req);
  if (found && found[0].collId !== undefined && /\/docs(\/|$)/.test(path)) {
    return [found[0], likeCosmos(found[1])];
  }
  return found;
};
