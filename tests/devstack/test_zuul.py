"""The gate jobs in .zuul.yaml: what they inherit, enable and select."""

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

MULTIATTACH_TESTS = [
    'tempest.api.compute.volumes.test_attach_volume.'
    'AttachVolumeMultiAttachTest.test_list_get_volume_attachments_multiattach',
    'tempest.api.compute.admin.test_volume_swap.TestMultiAttachVolumeSwap.'
    'test_volume_swap_with_multiattach',
]


def jobs():
    with open(os.path.join(ROOT, '.zuul.yaml')) as f:
        return {item['job']['name']: item['job']
                for item in yaml.safe_load(f) if 'job' in item}


def test_jobs_build_on_devstack_plugin_ceph():
    found = jobs()
    assert found['nova-shared-cache-tempest-ceph']['parent'] == \
        'devstack-plugin-ceph-tempest-py3'
    assert found['nova-shared-cache-tempest-ceph-multinode']['parent'] == \
        'devstack-plugin-ceph-multinode-tempest-py3'
    for job in found.values():
        assert 'nova-shared-cache' in job['vars']['devstack_plugins']
        assert job['vars']['devstack_localrc'][
            'ENABLE_VOLUME_MULTIATTACH'] is True


def test_regex_selects_the_multiattach_tests():
    for name, job in jobs().items():
        regex = re.compile(job['vars']['tempest_test_regex'].strip())
        for test in MULTIATTACH_TESTS:
            assert regex.search(test), (name, test)
        assert not regex.search(
            'tempest.api.compute.servers.test_servers.ServersTestJSON.'
            'test_create_server'), name


def test_multinode_job_runs_live_migration_with_volumes():
    regex = re.compile(jobs()['nova-shared-cache-tempest-ceph-multinode'][
        'vars']['tempest_test_regex'].strip())
    assert regex.search('tempest.api.compute.admin.test_live_migration.'
                        'LiveMigrationTest.test_volume_backed_live_migration')
