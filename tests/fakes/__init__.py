"""Local stand-ins for services out of reach (Resend, OpenAI), speaking their wire format."""
