"""`make demo`: three emulated boards, the real gateway, a broker and a live dashboard.

run.py (the command), stack.py (the processes), model.py (decoded readings and state),
dashboard.py (views), plot.py (a capture as a PNG), pybroker.py
(the embedded broker used without Mosquitto).
"""
