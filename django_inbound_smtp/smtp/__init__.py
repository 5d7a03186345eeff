"""The SMTP listener: aiosmtpd protocol, policy hooks and the server lifecycle."""
