"""LICENSE and CITATION.cff: present, parseable, and agreeing with setup.cfg."""

import configparser
import os

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_license_is_the_one_setup_cfg_declares():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(REPO, 'setup.cfg'))
  assert cfg['metadata']['license'] == 'Apache-2.0'
  assert cfg['metadata']['license_files'].strip() == 'LICENSE'
  with open(os.path.join(REPO, 'LICENSE'), encoding='utf-8') as f:
    text = f.read()
  assert 'Apache License' in text and 'Version 2.0, January 2004' in text
  assert 'END OF TERMS AND CONDITIONS' in text


def test_citation_names_the_software_and_the_paper():
  with open(os.path.join(REPO, 'CITATION.cff'), encoding='utf-8') as f:
    cff = yaml.safe_load(f)
  for key in ('cff-version', 'message', 'title', 'authors', 'type', 'license'):
    assert key in cff, key                      # CFF 1.2.0's required keys, and ours
  assert cff['license'] == 'Apache-2.0'
  paper = cff['preferred-citation']
  assert paper['title'] == 'ImageNet Classification with Deep Convolutional Neural Networks'
  assert [a['family-names'] for a in paper['authors']] == ['Krizhevsky', 'Sutskever', 'Hinton']
  assert paper['year'] == 2012
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(REPO, 'setup.cfg'))
  assert str(cff['version']) == cfg['metadata']['version']
