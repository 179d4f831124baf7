"""Network tests share the suite-wide hooks of ``tests/conftest.py`` (the looptime event-loop
leak guard lives there).

Rule: tests here leak nothing: no event loops, sockets, tasks or default-hub state.
"""
