"""The peer benchmark of SPEC section 8: a Node.js Socket.IO peer, a load generator, a driver."""
