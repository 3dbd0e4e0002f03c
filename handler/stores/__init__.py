"""Where finished variants and source pointers live: memory, filesystem, S3."""
