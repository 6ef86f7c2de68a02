"""The HIL rig: null-modem relays between ptys, the suite's stack, capture files."""
