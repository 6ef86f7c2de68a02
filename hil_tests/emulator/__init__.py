# The emulated board: world model, scenarios, supervisor (host) and device stand-ins.
