"""The execution service: executions, their state machine and events, status reports, signing keys."""
