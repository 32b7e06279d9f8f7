"""Getting notifications out of the agent: message form and sinks."""
