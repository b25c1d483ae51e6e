"""The AMQP 0-9-1 session: one :class:`~broker.amqp.connection.Connection` per client
socket (handshake, frames, heartbeats, output batching) and its channels (method
dispatch, content assembly, confirms, unacked deliveries, transactions, direct
reply-to).  It talks to the engine (vhosts, queues, the publish entry point) and
to the broker's services; nothing below it imports it."""
