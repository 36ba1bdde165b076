"""deltatune.serve: an OpenAI-compatible server over one base and many adapters, and a terminal chat.

    deltatune serve --model smollm2-135m --adapter support=runs/support
    deltatune chat runs/support

Modules: `server` (settings, loading, uvicorn), `app` (routes), `worker` (the generation
thread and its queue), `adapters` (registry, path checks, directory watching), `protocol`
(OpenAI wire format), `chat` (terminal chat), `cli`. Nothing is imported here so that
`deltatune --help` stays fast.
"""
