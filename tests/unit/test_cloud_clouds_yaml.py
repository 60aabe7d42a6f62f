"""tools/cloud's clouds.yaml in the user's config: written, kept, removed."""

import os

import pytest

from nova_shared_cache_lab import cloud as cloud_mod


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path / 'config'))
    c = cloud_mod.Cloud(root=str(tmp_path / 'stack'),
                        venv=str(tmp_path / 'venv'))
    os.makedirs(os.path.dirname(c.layout.clouds_yaml))
    with open(c.layout.clouds_yaml, 'w') as f:
        f.write('clouds:\n  nova-shared-cache: {}\n')
    return c


def test_written_where_openstacksdk_looks_and_removed(lab, tmp_path):
    path = tmp_path / 'config' / 'openstack' / 'clouds.yaml'
    assert cloud_mod.user_clouds_yaml() == str(path)
    assert lab.publish_clouds_yaml() is True
    text = path.read_text()
    assert text.startswith(cloud_mod.USER_CLOUDS_MARK)
    assert 'nova-shared-cache: {}' in text
    assert oct(path.stat().st_mode & 0o777) == '0o600'
    # A second up rewrites its own file.
    assert lab.publish_clouds_yaml() is True
    lab.unpublish_clouds_yaml()
    assert not path.exists()


def test_someone_elses_clouds_yaml_is_left_alone(lab, tmp_path):
    path = tmp_path / 'config' / 'openstack' / 'clouds.yaml'
    path.parent.mkdir(parents=True)
    path.write_text('clouds:\n  production: {}\n')
    assert lab.publish_clouds_yaml() is False
    lab.unpublish_clouds_yaml()
    assert path.read_text() == 'clouds:\n  production: {}\n'
