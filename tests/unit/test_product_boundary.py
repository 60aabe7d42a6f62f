"""The product holds only the product.

nova-shared-cache is installed on every Nova compute; the test and demo stack
(Ceph, libvirtd, tiny guests) is the separate distribution
nova-shared-cache-lab under lab/. Nothing of the product may import it, or
the compute would need a package it does not have.
"""

import ast
import configparser
import importlib.metadata
import os
import re
import sysconfig

from tests import compat as test_compat
from tests.unit import base

TOP = test_compat.source_tree()
PRODUCT_DIRS = ('nova_shared_cache', os.path.join('nova', 'virt',
                                                  'shared_cache'))
# A module path of the lab (or of the old nova_shared_cache.embedded).
LAB_MODULE = re.compile(
    r'(nova_shared_cache_lab|nova_shared_cache\.embedded)(\.\w+)*')


def _is_lab(module):
    parts = module.split('.')
    return parts[0] == 'nova_shared_cache_lab' or 'embedded' in parts


def lab_references(source, filename='<source>'):
    """(line, what) for every import of the lab in a module's source.

    Imports (absolute and relative), importlib.import_module/__import__
    calls and any string that is a lab module path (``-m`` arguments,
    mock targets).
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, 'import %s' % a.name)
                      for a in node.names if _is_lab(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ''
            for alias in node.names:
                name = '.'.join(filter(None, (module, alias.name)))
                if _is_lab(module) or _is_lab(name):
                    found.append((node.lineno, 'from %s%s import %s' % (
                        '.' * node.level, module, alias.name)))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and LAB_MODULE.fullmatch(node.value)):
            found.append((node.lineno, repr(node.value)))
    return found


def product_sources():
    for top in PRODUCT_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(TOP, top)):
            dirnames[:] = [d for d in dirnames if d != '__pycache__']
            for name in sorted(filenames):
                if name.endswith('.py'):
                    yield os.path.join(dirpath, name)


class TestProductBoundary(base.TestCase):

    def test_no_product_module_imports_the_lab(self):
        sources = list(product_sources())
        # The walk really covers the product (a wrong TOP finds nothing).
        self.assertIn(os.path.join(TOP, 'nova_shared_cache', 'driver.py'),
                      sources)
        bad = []
        for path in sources:
            with open(path) as f:
                bad += ['%s:%d: %s' % (os.path.relpath(path, TOP), line, what)
                        for line, what in lab_references(f.read(), path)]
        self.assertEqual([], bad)

    def test_the_check_sees_every_kind_of_import(self):
        for source in (
                'from nova_shared_cache_lab import ceph\n',
                'import nova_shared_cache_lab.stack\n',
                'import nova_shared_cache_lab\n',
                'from nova_shared_cache import embedded\n',
                'from nova_shared_cache.embedded import probe\n',
                'from . import embedded\n',
                'from .embedded import stack\n',
                'import importlib\n'
                'importlib.import_module("nova_shared_cache_lab.probe")\n',
                'argv = ["python3", "-m", "nova_shared_cache_lab.stack"]\n'):
            self.assertNotEqual([], lab_references(source), source)
        self.assertEqual([], lab_references(
            'from nova_shared_cache import exception\n'
            'import nova_shared_cache.libvirt.qmp\n'
            'label = "nova_shared_cache_labels"\n'))

    def test_no_embedded_package_in_the_tree(self):
        self.assertFalse(os.path.exists(
            os.path.join(TOP, 'nova_shared_cache', 'embedded')))
        self.assertTrue(os.path.isfile(os.path.join(
            TOP, 'lab', 'nova_shared_cache_lab', 'stack.py')))

    def test_the_product_distribution_lists_only_the_product(self):
        cfg = configparser.ConfigParser()
        cfg.read(os.path.join(TOP, 'setup.cfg'))
        packages = cfg['files']['packages'].split()
        self.assertEqual(['nova_shared_cache', 'nova/virt/shared_cache'],
                         packages)
        lab = configparser.ConfigParser()
        lab.read(os.path.join(TOP, 'lab', 'setup.cfg'))
        self.assertEqual('nova-shared-cache-lab', lab['metadata']['name'])
        # and the lab cloud's test-only compute driver (the control).
        self.assertEqual(['nova_shared_cache_lab', 'nova/virt/nsc_lab_hazard'],
                         lab['files']['packages'].split())

    def test_the_bindings_the_commands_import_are_declared(self):
        # libvirt-python is an extra (nova-compute has it already); the
        # installed metadata offers it, so 'pip install
        # nova-shared-cache[libvirt]' is what the error message says.
        dists = list(importlib.metadata.distributions(
            name='nova-shared-cache',
            path=[sysconfig.get_paths()['purelib']]))
        requires = dists[0].requires or []
        self.assertIn('libvirt', dists[0].metadata.get_all(
            'Provides-Extra') or [])
        self.assertTrue(any(r.startswith('libvirt-python')
                            and 'extra == "libvirt"' in r
                            for r in requires), requires)

    def test_the_installed_product_has_no_lab_files(self):
        # The wheel tox installed (a stale build/lib could put the old
        # embedded package back into it), not the egg-info a build leaves in
        # the tree (its SOURCES.txt is the sdist's: every tracked file).
        dists = list(importlib.metadata.distributions(
            name='nova-shared-cache',
            path=[sysconfig.get_paths()['purelib']]))
        self.assertEqual(1, len(dists))
        files = [str(f) for f in dists[0].files]
        self.assertIn('nova_shared_cache/driver.py', files)
        self.assertEqual([], [
            f for f in files
            if 'embedded' in f.split('/') or 'nova_shared_cache_lab' in f])
