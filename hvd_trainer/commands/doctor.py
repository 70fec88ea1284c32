"""`doctor`: the rank report (every rank's view, one table) or, with --hosts, the pre-flight
check of a multi-host launch. The checks themselves live in hvd_trainer.doctor and preflight."""
from __future__ import annotations

from hvd_trainer.doctor import run_doctor, run_preflight
from hvd_trainer.options import DoctorOptions


def run(options: DoctorOptions) -> int:
    if options.hosts:
        code, text = run_preflight(options.hosts, options.network_interface, options.ssh_port,
                                   options.ssh_identity_file)
        print(text, flush=True)
        return code
    code, text = run_doctor(options.strategy)
    if text:
        print(text, flush=True)
    return code
