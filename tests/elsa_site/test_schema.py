import re

import pytest

pytestmark = pytest.mark.django_db


def test_openapi_schema_is_served_anonymously(client):
    response = client.get("/elsa/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]


def test_api_docs_page_loads_its_assets_locally(client):
    response = client.get("/elsa/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui" in s for s in sources)
    assert all(not s.startswith(("http://", "https://", "//")) for s in sources), sources
