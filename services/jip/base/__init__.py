"""BASE: identity (users, projects, roles), the embedded token issuer and the audit log."""
