import asyncio, httpx
from tests.services.keycloak import KeycloakService
from tests.services.keycloak_login import login_for_tokens
from tests.test_e2e_keycloak import KeycloakAdmin, claims_of

async def test_offline(keycloak: KeycloakService) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        admin = KeycloakAdmin(keycloak, http)
        for attempt in range(3):
            tokens = await login_for_tokens(issuer=keycloak.issuer, client_id="graphgate-mcp", username="alice", password="alice-password", client=http, scope="mcp:tools offline_access", resource=keycloak.resource_url)
            print("typ", claims_of(tokens["refresh_token"])["typ"])
            await admin.end_sessions("alice")
            await asyncio.sleep(1)
            r = await http.post(keycloak.token_endpoint, data={"grant_type":"refresh_token","refresh_token":tokens["refresh_token"],"client_id":"graphgate-mcp"})
            print(attempt, r.status_code, r.text[:300])
            print("offline sessions", await admin.call("GET", f"/users/{await admin.user_id('alice')}/consents"))
