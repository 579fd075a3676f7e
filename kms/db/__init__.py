"""The KMS database: schema, versioned migrations, engine set-up."""
