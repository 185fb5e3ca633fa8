"""The simulated cells' physics, as host_tools/sim/vmroot/_simhw.py builds them inside the VM
(kept equal by a test): provisioning calibrates a virtual shelf's lanes with these."""

CPG = 420  # counts per gram of every simulated cell


def offset(lane: int) -> int:
    """A lane's raw reading with nothing on it."""
    return 100000 * (lane + 1) - 8000
