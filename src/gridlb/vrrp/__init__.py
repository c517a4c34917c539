"""VRRP v2/v3: packet codec, sans-IO state machine, asyncio transport and the VIP manager."""
