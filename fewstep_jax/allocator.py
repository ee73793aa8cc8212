"""Host allocator settings for the entry points: keep XLA:CPU's step buffers instead of faulting them in again.

Under glibc's defaults every XLA:CPU step returns its temporary buffer to the operating system and maps it afresh
on the next step: a digits U-Net step takes about 19,500 minor page faults (its 80 MB temp buffer in 4 KiB pages),
15-17% of its CPU time spent in the kernel. Two glibc behaviours cause it: a large block is served by mmap and
unmapped when freed, and a thread other than the main one allocates from its own arena, whose heaps (64 MiB at
most) cannot hold the block, so glibc maps it whatever mmap_max says. TUNABLES turns both off: one arena (the
main one, which grows with brk), no mmap, and freed memory at the top of the heap kept up to 1 GiB. With them a
step takes no page faults.

glibc reads its tunables only when a process starts, so `reexec_with_tunables()` (called by the entry points
before anything else is imported) starts the same command again once with GLIBC_TUNABLES set. It does nothing
where it cannot help or where the user has chosen: outside Linux with glibc, when GLIBC_TUNABLES is already set
(the user's own settings are kept; it also marks the re-started process), or with FEWSTEP_JAX_MALLOC=system.
The price is a single malloc lock for all threads, which costs nothing measurable on the steps here; set
FEWSTEP_JAX_MALLOC=system to compare, or to run with a debugger attached across the restart.
"""
import os
import platform
import sys

TUNABLES = 'glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824'
OPT_OUT = 'FEWSTEP_JAX_MALLOC'


def wanted(environ=None) -> bool:
  """Whether this process should restart with TUNABLES: Linux with glibc, and neither TUNABLES nor any other
  GLIBC_TUNABLES already set, and not opted out."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, '').lower() == 'system' or 'GLIBC_TUNABLES' in environ:
    return False
  return sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'


def active(environ=None) -> bool:
  environ = os.environ if environ is None else environ
  return environ.get('GLIBC_TUNABLES') == TUNABLES


def reexec_with_tunables() -> None:
  """Replaces this process with the same command under TUNABLES when `wanted()`; returns otherwise. If the
  restart itself fails, the run goes on with the system allocator's defaults and says so."""
  if not wanted():
    return
  os.environ['GLIBC_TUNABLES'] = TUNABLES
  try:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable] + sys.orig_argv[1:])
  except OSError as error:
    del os.environ['GLIBC_TUNABLES']
    print(f'warning: could not restart with the step-buffer allocator settings ({error}); running with the '
          f'system defaults (set {OPT_OUT}=system to skip the restart)', file=sys.stderr, flush=True)
