"""Networking: the MQTT 3.1.1 client (mqtt), its wire format (mqtt_wire), its stream (transport)."""
