"""Every declared dependency installs on the platforms users run on.

For each platform (macOS arm64 with Python 3.12, Linux x86-64 with Python 3.13, Linux
aarch64 with Python 3.12, Colab's Linux x86-64 with Python 3.12), each requirement of
setup.cfg's install_requires whose environment marker applies there must have a
release, within its version specifier, that ships a wheel installable there (or a
pure-Python wheel). Only the package index's JSON metadata is read: nothing is
downloaded. Pure-Python sdist-only packages would be accepted, none is declared.

Needs the package index (pypi.org): skipped, saying so, where it cannot be reached.
"""

import configparser
import functools
import json
import os
import urllib.error
import urllib.request

import pytest
from packaging import tags
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INDEX = 'https://pypi.org/pypi/{name}/json'


def _manylinux(arch: str) -> list[str]:
  return ([f'manylinux_2_{minor}_{arch}' for minor in range(39, 16, -1)]
          + [f'manylinux2014_{arch}'])


# name -> (python version, platform tags, marker environment)
PLATFORMS = {
    'macos-arm64-py3.12': ((3, 12), list(tags.mac_platforms((14, 0), 'arm64')),
                           {'sys_platform': 'darwin', 'platform_system': 'Darwin',
                            'platform_machine': 'arm64'}),
    'linux-x86_64-py3.13': ((3, 13), _manylinux('x86_64'),
                            {'sys_platform': 'linux', 'platform_system': 'Linux',
                             'platform_machine': 'x86_64'}),
    'linux-aarch64-py3.12': ((3, 12), _manylinux('aarch64'),
                             {'sys_platform': 'linux', 'platform_system': 'Linux',
                              'platform_machine': 'aarch64'}),
    'colab-linux-x86_64-py3.12': ((3, 12), _manylinux('x86_64'),
                                  {'sys_platform': 'linux', 'platform_system': 'Linux',
                                   'platform_machine': 'x86_64'}),
}


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
