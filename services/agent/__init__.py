"""The agent: hosts ``AgentService``, runs execution adapters, builds extension service contexts."""
