"""The entry points' allocator restart: it takes effect once, keeps the user's settings, and stops the faults."""
import json
import os
import platform
import subprocess
import sys

import pytest

from fewstep_jax import allocator

# A thread (as XLA:CPU's are) that allocates, writes and frees an 80 MB buffer five times, counting page faults.
SCRIPT = r'''
import json, os, resource, sys, threading
from fewstep_jax import allocator
allocator.reexec_with_tunables()
import numpy as np
counts = []
def work():
  for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = np.ones(10_000_000)
    del buffer
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(json.dumps(dict(tunables=os.environ.get('GLIBC_TUNABLES'), argv=sys.argv[1:], faults=counts)))
'''


def _run(tmp_path, **environ):
  script = tmp_path / 'faults.py'
  script.write_text(SCRIPT)
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', allocator.OPT_OUT)}
  env.update(environ)
  result = subprocess.run([sys.executable, str(script), '--flag=1'], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_wanted_respects_the_users_settings():
  glibc = sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'
  assert allocator.wanted({}) == glibc
  assert not allocator.wanted({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=4'})
  assert not allocator.wanted({allocator.OPT_OUT: 'system'})
  assert allocator.active({'GLIBC_TUNABLES': allocator.TUNABLES})
  assert not allocator.active({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=4'})


@pytest.mark.skipif(not allocator.wanted({}), reason='needs Linux with glibc')
def test_restart_keeps_the_command_and_stops_a_threads_buffer_faulting(tmp_path):
  tuned = _run(tmp_path)
  system = _run(tmp_path, **{allocator.OPT_OUT: 'system'})
  assert tuned['tunables'] == allocator.TUNABLES and tuned['argv'] == ['--flag=1']
  assert system['tunables'] is None
  # The first allocation maps the heap; after it, the tuned process reuses it and the system one maps it again.
  assert sum(tuned['faults'][1:]) < 10, tuned
  assert min(system['faults'][1:]) > max(tuned['faults'][1:]), (system, tuned)
  kept = _run(tmp_path, GLIBC_TUNABLES='glibc.malloc.arena_max=4')
  assert kept['tunables'] == 'glibc.malloc.arena_max=4'
