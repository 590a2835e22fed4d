"""The module base: one AnsibleModule subclass for every lifeboat_* module (the module layer).

``LifeboatModule.run(work)`` calls ``work()`` and turns what it raises into a failed task the same way
everywhere:

* a ``LifeboatError`` -> ``fail_json(msg=str(exc), error=<class name>, option=<the option it names>,
  **exc.partial)``: the engine's message already names the option and the cause; ``exc.partial`` is the
  result declared so far (what was copied, the steps run...), returned with the failure;
* an ImportError -> the missing Python dependency, named;
* anything else -> ``"<what> failed: <class>: <first line>"``, never a traceback.

Secrets: every option declared ``no_log=True`` (and its aliases) is masked by AnsibleModule itself in
``msg`` and every returned value.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lifeboat.errors import LifeboatError


class LifeboatModule(AnsibleModule):
    def __init__(self, argument_spec: dict[str, Any], what: str = "the task", **kwargs: Any):
        kwargs.setdefault("supports_check_mode", True)
        super().__init__(argument_spec=argument_spec, **kwargs)
        self.what = what

    def fail_error(self, exc: BaseException, **extra: Any) -> NoReturn:
        """Fail the task for ``exc`` (see the module docstring)."""
        if isinstance(exc, LifeboatError):
            out: dict[str, Any] = {"error": exc.__class__.__name__, **extra}
            if exc.option:
                out["option"] = exc.option
            out.update(exc.partial or {})  # what was done wins over the caller's defaults (e.g. changed)
            self.fail_json(msg=str(exc), **out)
        if isinstance(exc, ImportError):
            self.fail_json(msg=f"a Python dependency is missing on the managed host: {exc.name} (psycopg 3, boto3 "
                               "and zstandard are required: see requirements-runtime.txt)", error="ImportError",
                           **extra)
        first = (str(exc).strip().splitlines() or [""])[0]
        self.fail_json(msg=f"{self.what} failed: {exc.__class__.__name__}: {first}", error=exc.__class__.__name__,
                       **extra)

    def run(self, work: Callable[[], Any], **extra: Any) -> Any:
        """``work()``; a failure becomes a failed task (``extra`` is returned with it)."""
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a failed task, named
            self.fail_error(exc, **extra)
