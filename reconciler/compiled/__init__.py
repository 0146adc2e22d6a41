"""The schemas' validators as fastjsonschema generates them (see `schema.compiled_source`)."""
