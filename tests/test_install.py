"""Every declared dependency installs on the platforms users run on, and the lock resolves.

Two checks, each on the platforms users run on (macOS arm64, Linux x86-64 including
Colab's, Linux aarch64) and Python 3.11, 3.12 and 3.13 (Colab's):
- each requirement of setup.cfg's install_requires whose environment marker applies
  must have a release, within its version specifier, that ships a wheel installable
  there (or a pure-Python sdist);
- the lock (requirements.txt) resolves: every pin that applies has a distribution there,
  and the dependencies its wheel's METADATA declares (with the extras asked for), and
  install_requires, are all pinned in the lock at versions that satisfy them, with each
  Requires-Python met. That is what `pip install -r requirements.txt` checks, on another
  machine's platform. `pip install --dry-run --platform ... --python-version ...` would
  say the same but downloads every wheel to read its metadata (about two minutes per
  platform here); this reads each wheel's METADATA with HTTP range requests instead
  (a few KB per wheel, about ten seconds for all nine platforms).
requirements-torch.txt's pins are checked for a wheel on the platforms their markers
select. Nothing is installed.

Needs the package index (pypi.org): skipped, saying so, where it cannot be reached.
"""

import concurrent.futures
import configparser
import functools
import io
import json
import os
import random
import re
import struct
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from email.parser import Parser

import pytest
from packaging import tags
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INDEX = 'https://pypi.org/pypi/{name}/json'


def _manylinux(arch: str) -> list[str]:
  """glibc 2.39 (a current distribution) and every older manylinux tag, legacy aliases
  (manylinux2014 = 2.17, manylinux2010 = 2.12, manylinux1 = 2.5) included, as pip does."""
  return ([f'manylinux_2_{minor}_{arch}' for minor in range(39, 4, -1)]
          + [f'manylinux{alias}_{arch}' for alias in ('2014', '2010', '1')])


# The platforms users run on: tags of the wheels that install there, marker variables.
_OSES = {
    'macos-arm64': (list(tags.mac_platforms((14, 0), 'arm64')),
                    {'sys_platform': 'darwin', 'platform_system': 'Darwin',
                     'platform_machine': 'arm64'}),
    'linux-x86_64': (_manylinux('x86_64'),          # with Python 3.13: Colab
                     {'sys_platform': 'linux', 'platform_system': 'Linux',
                      'platform_machine': 'x86_64'}),
    'linux-aarch64': (_manylinux('aarch64'),
                      {'sys_platform': 'linux', 'platform_system': 'Linux',
                       'platform_machine': 'aarch64'}),
}
PYTHONS = ((3, 11), (3, 12), (3, 13))
# name -> (python version, platform tags, marker environment)
PLATFORMS = {f'{os_name}-py{py[0]}.{py[1]}': (py, platform_tags, marker_env)
             for os_name, (platform_tags, marker_env) in _OSES.items() for py in PYTHONS}
# Intel Macs: no jaxlib or TensorFlow release of the lock's has a wheel there.
INTEL_MAC = ((3, 12), list(tags.mac_platforms((14, 0), 'x86_64')),
             {'sys_platform': 'darwin', 'platform_system': 'Darwin',
              'platform_machine': 'x86_64'})


def install_requires() -> list[Requirement]:
  parser = configparser.ConfigParser()
  parser.read(os.path.join(REPO, 'setup.cfg'))
  lines = parser['options']['install_requires'].splitlines()
  return [Requirement(line.split('#')[0].strip()) for line in lines
          if line.split('#')[0].strip()]


@functools.cache
def _release_files(name: str) -> dict:
  try:
    with urllib.request.urlopen(INDEX.format(name=canonicalize_name(name)), timeout=30) as r:
      return json.load(r)['releases']
  except (urllib.error.URLError, TimeoutError, OSError) as e:
    pytest.skip(f'package index not reachable ({e}); installability on other platforms '
                'was not checked')


def installable_version(req: Requirement, python: tuple[int, int],
                        platforms: list[str]) -> str | None:
  """The newest release of `req` with a wheel (or a pure-Python sdist) for the target."""
  supported = set(tags.cpython_tags(python, platforms=platforms)) | set(
      tags.compatible_tags(python, platforms=platforms))
  versions = []
  for text, files in _release_files(req.name).items():
    try:
      version = Version(text)
    except InvalidVersion:
      continue
    if version.is_prerelease or not req.specifier.contains(version) or not files:
      continue
    versions.append((version, files))
  for version, files in sorted(versions, key=lambda vf: vf[0], reverse=True):
    for f in files:
      if f.get('yanked'):
        continue
      if f['packagetype'] == 'bdist_wheel':
        if set(parse_wheel_filename(f['filename'])[3]) & supported:
          return str(version)
      elif f['packagetype'] == 'sdist' and not any(
          g['packagetype'] == 'bdist_wheel' for g in files):
        return str(version)          # sdist-only: pure Python (built on install)
  return None


def test_setup_cfg_declares_tensorflow_by_platform():
  reqs = {r.name: r for r in install_requires()}
  linux_x86 = {**default_environment(), **PLATFORMS['linux-x86_64-py3.13'][2]}
  mac = {**default_environment(), **PLATFORMS['macos-arm64-py3.12'][2]}
  assert reqs['tensorflow-cpu'].marker.evaluate(linux_x86)
  assert not reqs['tensorflow'].marker.evaluate(linux_x86)
  assert reqs['tensorflow'].marker.evaluate(mac)
  assert not reqs['tensorflow-cpu'].marker.evaluate(mac)
  assert 'torch' not in reqs


@pytest.mark.slow
@pytest.mark.parametrize('platform', sorted(PLATFORMS))
def test_every_dependency_has_a_distribution_for(platform):
  python, platform_tags, marker_env = PLATFORMS[platform]
  env = {**default_environment(), **marker_env,
         'python_version': f'{python[0]}.{python[1]}',
         'python_full_version': f'{python[0]}.{python[1]}.0'}
  missing = []
  for req in install_requires():
    if req.marker is not None and not req.marker.evaluate(env):
      continue
    if installable_version(req, python, platform_tags) is None:
      missing.append(str(req))
  assert not missing, f'no installable release on {platform} for: {missing}'


@pytest.mark.slow
def test_the_check_would_catch_tensorflow_cpu_on_apple_silicon():
  """The positive control: the old declaration (tensorflow-cpu everywhere) fails there."""
  python, platform_tags, _ = PLATFORMS['macos-arm64-py3.12']
  assert installable_version(Requirement('tensorflow-cpu==2.21.0'), python,
                             platform_tags) is None
  assert installable_version(Requirement('tensorflow==2.21.0'), python,
                             platform_tags) == '2.21.0'


# ------------------------------------------------------------------------------ the lock

SIMPLE = 'https://pypi.org/simple/{name}/'
_THREADS = 32
_TAIL = 256 * 1024
_RETRIES = 5


def marker_environment(python: tuple[int, int], marker_env: dict) -> dict:
  return {**default_environment(), **marker_env, 'implementation_name': 'cpython',
          'platform_python_implementation': 'CPython',
          'python_version': f'{python[0]}.{python[1]}',
          'python_full_version': f'{python[0]}.{python[1]}.0'}


def read_lock(name: str = 'requirements.txt') -> list[Requirement]:
  """The pins of a requirements file (`name==version`, with or without a marker)."""
  with open(os.path.join(REPO, name)) as f:
    lines = [line.split('#')[0].strip() for line in f]
  reqs = [Requirement(line) for line in lines if line]
  for req in reqs:
    assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == '==', str(req)
  return reqs


def pinned_version(req: Requirement) -> Version:
  return Version(next(iter(req.specifier)).version)


def _get(url: str, headers: dict | None = None) -> tuple[bytes, dict]:
  """GET `url`, retrying transient failures (a burst of 32 threads' DNS lookups has been
  answered "Temporary failure in name resolution"); skips only when the index stays
  unreachable for about half a minute; a 404 is raised."""
  request = urllib.request.Request(url, headers=headers or {})
  for attempt in range(_RETRIES + 1):
    try:
      with urllib.request.urlopen(request, timeout=60) as r:
        return r.read(), dict(r.headers)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
      if isinstance(e, urllib.error.HTTPError) and e.code == 404:
        raise
      if attempt == _RETRIES:
        pytest.skip(f'package index not reachable after {_RETRIES + 1} tries ({e}); '
                    'the lock was not resolved')
      time.sleep(min(2 ** attempt, 8) + random.random())
  raise AssertionError('unreachable')


@functools.cache
def index_files(name: str) -> tuple[dict, ...]:
  """The project's files on the index (PEP 691 JSON): filename, url, requires-python."""
  body, _ = _get(SIMPLE.format(name=canonicalize_name(name)),
                 {'Accept': 'application/vnd.pypi.simple.v1+json'})
  return tuple(f for f in json.loads(body)['files'] if not f.get('yanked'))


def _range(url: str, first: int, last: int | None = None) -> tuple[bytes, int]:
  """Bytes first..last of `url` (a negative `first`: the last -first bytes) and its size."""
  spec = f'bytes={first}' if last is None else f'bytes={first}-{last}'
  body, headers = _get(url, {'Range': spec})
  content_range = {k.lower(): v for k, v in headers.items()}.get('content-range')
  assert content_range, f'{url}: the index ignored a range request'
  return body, int(content_range.rsplit('/', 1)[1])


@functools.cache
def wheel_metadata(url: str) -> tuple[tuple[str, ...], str | None]:
  """(Requires-Dist, Requires-Python) of a wheel, from its .dist-info/METADATA read out of
  the zip with range requests: the central directory at the end, then that one member."""
  tail, size = _range(url, -_TAIL)       # the whole of most wheels; METADATA is near the end
  start = size - len(tail)
  eocd = tail.rfind(b'PK\x05\x06')
  cd_size, cd_offset = struct.unpack('<II', tail[eocd + 12:eocd + 20])
  if cd_offset < start:
    tail, _ = _range(url, cd_offset, size - 1)
    start = cd_offset
  cd = tail[cd_offset - start:cd_offset - start + cd_size]
  i, member = 0, None
  while i < len(cd) and cd[i:i + 4] == b'PK\x01\x02':
    method, = struct.unpack('<H', cd[i + 10:i + 12])
    packed, = struct.unpack('<I', cd[i + 20:i + 24])
    n_name, n_extra, n_comment = struct.unpack('<HHH', cd[i + 28:i + 34])
    offset, = struct.unpack('<I', cd[i + 42:i + 46])
    name = cd[i + 46:i + 46 + n_name].decode()
    if re.fullmatch(r'[^/]+\.dist-info/METADATA', name):
      member = (method, packed, offset)
    i += 46 + n_name + n_extra + n_comment
  assert member, f'{url}: no .dist-info/METADATA'
  method, packed, offset = member
  if offset >= start:
    local = tail[offset - start:]
  else:
    local, _ = _range(url, offset, min(size - 1, offset + 30 + 1024 + packed))
  n_name, n_extra = struct.unpack('<HH', local[26:30])
  data = local[30 + n_name + n_extra:30 + n_name + n_extra + packed]
  text = (zlib.decompressobj(-15).decompress(data) if method == 8 else data).decode()
  message = Parser().parsestr(text, headersonly=True)
  return tuple(message.get_all('Requires-Dist') or ()), message.get('Requires-Python')


@functools.cache
def sdist_requirements(url: str) -> tuple[str, ...]:
  """An sdist-only (pure-Python) release's requirements, from its egg-info requires.txt:
  the unconditional section and `[:marker]` sections."""
  body, _ = _get(url)
  with tarfile.open(fileobj=io.BytesIO(body)) as tar:
    found = [m for m in tar.getmembers() if m.name.endswith('.egg-info/requires.txt')]
    text = tar.extractfile(found[0]).read().decode() if found else ''
  out, marker = [], ''
  for line in text.splitlines():
    line = line.strip()
    if line.startswith('['):
      section = line.strip('[]')
      marker = section[1:] if section.startswith(':') else None    # extras: not asked for
    elif line and marker is not None:
      out.append(f'{line}; {marker}' if marker else line)
  return tuple(out)


def _supported_tags(python: tuple[int, int], platform_tags: list[str]) -> list:
  return list(tags.cpython_tags(python, platforms=platform_tags)) + list(
      tags.compatible_tags(python, platforms=platform_tags))


def choose_distribution(name: str, version: Version, python: tuple[int, int],
                        platform_tags: list[str]) -> dict | None:
  """The file pip would install for name==version there: the wheel of the most specific
  tag, else the sdist of a release that has no wheel at all (pure Python); None if none."""
  priority = {t: i for i, t in enumerate(_supported_tags(python, platform_tags))}
  wheels, sdists = [], []
  for f in index_files(name):
    filename = f['filename']
    if filename.endswith('.whl'):
      _, v, _, wheel_tags = parse_wheel_filename(filename)
      if v == version:
        wheels.append((min((priority[t] for t in wheel_tags if t in priority), default=None),
                       f))
    elif filename.endswith(('.tar.gz', '.zip')):
      try:
        if parse_sdist_filename(filename)[1] == version:
          sdists.append(f)
      except ValueError:
        continue
  fitting = sorted((p, f['filename'], f) for p, f in wheels if p is not None)
  if fitting:
    return fitting[0][2]
  if not wheels and sdists:
    return sdists[0]
  return None


def _requirements_of(dist: dict) -> tuple[tuple[str, ...], str | None]:
  if dist['filename'].endswith('.whl'):
    requires, requires_python = wheel_metadata(dist['url'])
    return requires, requires_python or dist.get('requires-python')
  return sdist_requirements(dist['url']), dist.get('requires-python')


def lock_problems(lock: list[Requirement], roots: list[Requirement],
                  python: tuple[int, int], platform_tags: list[str], marker_env: dict
                  ) -> list[str]:
  """Why `pip install` of the pins in `lock` (plus `roots`) would fail on this platform:
  a pin with no distribution there, a Python its release refuses, or a dependency (of a
  pin, with the extras asked for, or of a root) that is not pinned, or pinned at a version
  it does not accept. Empty: the lock resolves, to exactly its pins."""
  env = marker_environment(python, marker_env)
  applies = lambda r: r.marker is None or r.marker.evaluate({**env, 'extra': ''})
  pins = {canonicalize_name(r.name): pinned_version(r) for r in lock if applies(r)}
  with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
    list(pool.map(index_files, pins))
    dists = dict(zip(pins, pool.map(lambda n: choose_distribution(n, pins[n], python,
                                                                  platform_tags), pins),
                     strict=True))
    found = {n: d for n, d in dists.items() if d is not None}
    metadata = dict(zip(found, pool.map(_requirements_of, found.values()), strict=True))
  problems = [f'{n}=={pins[n]}: no wheel for this platform' for n, d in dists.items()
              if d is None]
  full = Version(env['python_full_version'])
  for name, (_, requires_python) in metadata.items():
    if requires_python and full not in SpecifierSet(requires_python):
      problems.append(f'{name}=={pins[name]}: Requires-Python {requires_python}')

  def check(req: Requirement, needed_by: str) -> None:
    name = canonicalize_name(req.name)
    if name not in pins:
      problems.append(f'{req} (needed by {needed_by}) is not in the lock')
    elif not req.specifier.contains(pins[name], prereleases=True):
      problems.append(f'{req} (needed by {needed_by}): the lock pins {pins[name]}')

  checked: set[tuple[str, str]] = set()
  todo = [(n, '') for n in metadata] + [(canonicalize_name(r.name), e) for r in roots
                                        if applies(r) for e in r.extras]
  for root in roots:
    if applies(root):
      check(root, 'setup.cfg')
  while todo:
    name, extra = todo.pop()
    if (name, extra) in checked or name not in metadata:
      continue
    checked.add((name, extra))
    for line in metadata[name][0]:
      dep = Requirement(line)
      if dep.marker is not None and not dep.marker.evaluate({**env, 'extra': extra}):
        continue
      if extra and (dep.marker is None or 'extra' not in str(dep.marker)):
        continue                      # an unconditional dependency: checked with extra ''
      check(dep, f'{name}[{extra}]' if extra else name)
      todo.extend((canonicalize_name(dep.name), e) for e in dep.extras)
  return sorted(set(problems))


def test_the_lock_and_install_requires_take_no_torch():
  """The README's first install line (`pip install -r requirements.txt && pip install -e
  .`) takes no torch: neither file names it (the resolution test below shows nothing in
  the lock depends on it: it is not pinned, so a dependency on it would be reported)."""
  names = {canonicalize_name(r.name) for r in read_lock() + install_requires()}
  assert not names & {'torch', 'torchvision', 'triton'}
  torch_pins = {canonicalize_name(r.name) for r in read_lock('requirements-torch.txt')}
  assert torch_pins == {'torch', 'torchvision'}


@pytest.mark.slow
@pytest.mark.parametrize('platform', sorted(PLATFORMS))
def test_the_lock_resolves_on(platform):
  python, platform_tags, marker_env = PLATFORMS[platform]
  problems = lock_problems(read_lock(), install_requires(), python, platform_tags,
                           marker_env)
  assert not problems, f'requirements.txt does not resolve on {platform}:\n' + '\n'.join(
      problems)


@pytest.mark.slow
def test_the_lock_check_would_catch_a_missing_dependency_and_an_intel_mac():
  """The positive controls: a lock without a dependency of a pin, one that pins it at a
  version the pin refuses; and why Intel Macs are not among the platforms: the lock's
  jaxlib and TensorFlow have no wheel there (jaxlib has one for Apple silicon)."""
  python, platform_tags, marker_env = PLATFORMS['linux-x86_64-py3.13']
  lock = [r for r in read_lock() if canonicalize_name(r.name) in ('jax', 'jaxlib', 'numpy')]
  problems = lock_problems(lock, [], python, platform_tags, marker_env)
  assert 'ml_dtypes>=0.5.0 (needed by jax) is not in the lock' in problems, problems
  assert 'scipy>=1.14 (needed by jaxlib) is not in the lock' in problems, problems
  old = [Requirement('jaxlib==0.4.30') if r.name == 'jaxlib' else r for r in lock]
  problems = lock_problems(old, [], python, platform_tags, marker_env)
  assert any(p.startswith('jaxlib') and 'the lock pins 0.4.30' in p for p in problems)
  python, platform_tags, _ = INTEL_MAC
  pins = {canonicalize_name(r.name): pinned_version(r) for r in read_lock()}
  for name in ('jaxlib', 'tensorflow'):
    assert choose_distribution(name, pins[name], python, platform_tags) is None, name
  assert choose_distribution('jaxlib', pins['jaxlib'], *PLATFORMS['macos-arm64-py3.12'][:2])


def extras_require(extra: str) -> list[Requirement]:
  parser = configparser.ConfigParser()
  parser.read(os.path.join(REPO, 'setup.cfg'))
  lines = parser['options.extras_require'][extra].splitlines()
  return [Requirement(line.split('#')[0].strip()) for line in lines
          if line.split('#')[0].strip()]


@pytest.mark.slow
@pytest.mark.parametrize('platform', sorted(PLATFORMS) + ['macos-x86_64-py3.12'])
def test_the_torch_pins_have_wheels_on(platform):
  """requirements-torch.txt: on each platform, the torch and torchvision its markers
  select have a wheel there and satisfy setup.cfg's `torch` extra, whose markers select
  the same platforms; on Intel Macs neither selects anything (torch has had no Intel-Mac
  wheel since 2.2.2, which predates NumPy 2)."""
  python, platform_tags, marker_env = (INTEL_MAC if platform.startswith('macos-x86_64')
                                       else PLATFORMS[platform])
  env = marker_environment(python, marker_env)
  selected = {canonicalize_name(r.name): r for r in read_lock('requirements-torch.txt')
              if r.marker.evaluate(env)}
  extra = {canonicalize_name(r.name): r for r in extras_require('torch')
           if r.marker.evaluate(env)}
  assert sorted(selected) == sorted(extra)
  if platform.startswith('macos-x86_64'):
    assert not selected
    mac_x86 = {parse_wheel_filename(f['filename'])[1] for f in index_files('torch')
               if f['filename'].endswith('.whl') and 'macosx' in f['filename']
               and f['filename'].endswith('_x86_64.whl')}
    assert max(mac_x86) == Version('2.2.2'), sorted(mac_x86)[-3:]
    return
  assert sorted(selected) == ['torch', 'torchvision']
  for name, req in selected.items():
    assert extra[name].specifier.contains(pinned_version(req))
    assert choose_distribution(req.name, pinned_version(req), python, platform_tags), (
        f'{req}: no wheel on {platform}')


def test_the_lock_pins_the_tensorflow_build_setup_cfg_declares():
  tf = ('tensorflow', 'tensorflow-cpu')
  for platform, (python, _, marker_env) in PLATFORMS.items():
    env = marker_environment(python, marker_env)
    in_lock = {canonicalize_name(r.name) for r in read_lock()
               if canonicalize_name(r.name) in tf and r.marker.evaluate(env)}
    declared = {canonicalize_name(r.name) for r in install_requires()
                if r.name in tf and r.marker.evaluate(env)}
    assert in_lock == declared and len(in_lock) == 1, platform
