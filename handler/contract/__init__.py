"""Next.js's ``/_next/image`` contract: parameters, Accept, patterns, config, headers, messages."""
