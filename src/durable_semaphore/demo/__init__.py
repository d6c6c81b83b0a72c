"""The demo harness behind ``durable-semaphore demo`` and ``durable-semaphore local-dynamodb``.

It lives apart from the runtime package: ``import durable_semaphore`` never imports it (a test
checks), because it needs the ``demo`` extra (the SDK's testing library, ministack, matplotlib)
and nothing in a deployed function should. The CLI imports :mod:`.command` inside its commands.

Modules, by job; each imports only modules listed above it, so the package has no import cycle:

* :mod:`.observer`: the independent observer: in-flight intervals, waits and fairness read from
  the execution histories, and DynamoDB requests counted on the wire; never the limiter's word.
* :mod:`.local_runner`: what the installed testing library can do, and the workaround for
  testing 1.2.1's timers.
* :mod:`.quiet`: the logging filters that turn the runner's expected noise into counts, and the
  Ctrl-C path that keeps the runner's threads off the terminal.
* :mod:`.scenario`: what to run (:class:`~.scenario.DemoConfig`), the durable handlers, and the
  default scenario for the installed SDK.
* :mod:`.result`: the measured run (:class:`~.result.DemoResult`) and the progress snapshot.
* :mod:`.embedded`: an embedded DynamoDB (ministack, pure Python) on a loopback port.
* :mod:`.lambda_endpoint`: the testing library's durable-execution Lambda API, through which a
  releaser wakes waiters of other executions, as deployed functions are woken.
* :mod:`.running`: build a run, run it in the local runner, judge it from the histories.
* :mod:`.report`: the progress line, the summary and the comparison, as text.
* :mod:`.plot`: the PNG timeline.
* :mod:`.command`: the CLI commands' bodies.
"""

from __future__ import annotations

#: What the user is told to install when the ``demo`` extra is missing.
INSTALL_HINT = "install the demo extra: pip install 'durable-semaphore[demo]'"
