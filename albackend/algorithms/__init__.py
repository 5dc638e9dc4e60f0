"""Pure algorithms: numpy (or plain Python) functions of arrays, no torch, HTTP, Redis or Label Studio.

The paper's mathematics lives here (query strategies, UPS, PLASM filters), so it can be read and tested alone.
"""
