"""Identity: turn a worker's proof (OIDC token, later an AWS IAM proof) into an Identity."""
