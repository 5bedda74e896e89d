//! C ABI for AgentCompress (see include/agentcompress.h).
