"""The agent (spec §2): hosts ``AgentService``, runs execution adapters, builds extension service contexts."""
