"""Development doubles shipped beside (not inside) the cotpd library: the fake OpenAI-compatible server."""
