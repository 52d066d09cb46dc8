"""The networks, their sharding over the (data, model) mesh, the jitted steps, the
optimizer, the communication summary."""
