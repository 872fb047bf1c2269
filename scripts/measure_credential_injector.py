#!/usr/bin/env python3
# Usage: scripts/measure_credential_injector.py ENVOY_BINARY up|down [last|first|cds|hcm]
# (docs/credentials.md). Loopback only; one Envoy, stopped at the end.
"""Measures envoy.filters.http.credential_injector (OAuth2 client credentials) as an upstream filter
of two order-like clusters: startup, token fetches per cluster, and a down token endpoint."""
import json, os, socket, subprocess, sys, threading, time, urllib.request, urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENVOY = sys.argv[1]
TOKEN_UP = sys.argv[2] == "up"
MODE = sys.argv[3] if len(sys.argv) > 3 else "last"
WORK = f"/tmp/credential-injector/{abs(hash(ENVOY))}-{sys.argv[2]}-{sys.argv[3] if len(sys.argv) > 3 else 0}"
os.makedirs(WORK, exist_ok=True)
token_requests, upstream_auth = [], []

class Token(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        token_requests.append(body.decode())
        out = json.dumps({"access_token": f"tok{len(token_requests)}", "token_type": "Bearer", "expires_in": 3600}).encode()
        self.send_response(200); self.send_header("content-type", "application/json"); self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)

class Upstream(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        upstream_auth.append(self.headers.get("authorization"))
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"{}")

def serve(handler):
    s = ThreadingHTTPServer(("127.0.0.1", 0), handler); threading.Thread(target=s.serve_forever, daemon=True).start(); return s

def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

token = serve(Token); up = serve(Upstream)
token_port = token.server_address[1] if TOKEN_UP else free()
listen, admin = free(), free()
def injector():
    return {"name": "envoy.filters.http.credential_injector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
        "overwrite": True,
        "credential": {"name": "envoy.http.injected_credentials.oauth2", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.oauth2.v3.OAuth2",
            "token_endpoint": {"cluster": "token", "uri": f"127.0.0.1:{token_port}/token", "timeout": "2s"},
            "scopes": ["https://cognitiveservices.azure.com/.default"],
            "client_credentials": {"client_id": "cid", "client_secret": {"name": "client-secret"}}}}}}
def cluster(name, port, filters=True):
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
    if filters and MODE != "hcm":
        c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
            "http_filters": [injector(), {"name": "envoy.filters.http.upstream_codec", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]}}
    return c
routes = [{"match": {"prefix": f"/{c}"}, "route": {"cluster": c}} for c in ("order_a", "order_b")]
config = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
  "static_resources": {
    "secrets": [{"name": "client-secret", "generic_secret": {"secret": {"inline_string": "s3cret"}}}],
    "listeners": [{"address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}}, "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "m", "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}]},
        "http_filters": ([injector()] if MODE == "hcm" else []) + [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
    "clusters": ([cluster("token", token_port, False)] if MODE == "first" else []) + [cluster("order_a", up.server_address[1]), cluster("order_b", up.server_address[1])] + ([cluster("token", token_port, False)] if MODE in ("last", "hcm") else [])}}
if MODE == "cds":
    cds = f"{WORK}/cds.json"
    open(cds, "w").write(json.dumps({"resources": [{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", **cluster("token", token_port, False)}]}))
    config["node"] = {"id": "n", "cluster": "c"}
    config["dynamic_resources"] = {"cds_config": {"resource_api_version": "V3", "path_config_source": {"path": cds}}}
path = f"{WORK}/envoy.json"; open(path, "w").write(json.dumps(config))
proc = subprocess.Popen([ENVOY, "-c", path, "--concurrency", "1", "--base-id", str(free() % 60000), "-l", "info"],
                        stdout=open(f"{WORK}/out", "w"), stderr=subprocess.STDOUT)
for _ in range(100):
    time.sleep(0.1)
    if proc.poll() is not None: break
    try: socket.create_connection(("127.0.0.1", listen), 0.2).close(); break
    except OSError: pass
if proc.poll() is not None:
    tail = open(f"{WORK}/out").read()[-600:]
    print(f"startup: exited {proc.returncode}; {'Segmentation fault' in tail and 'SEGFAULT' or ''}\n{tail[-300:]}"); sys.exit()
time.sleep(1.5)
results = []
for c in ("order_a", "order_b", "order_a", "order_b"):
    try:
        r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{listen}/{c}", data=b"{}", method="POST"), timeout=5)
        results.append((c, r.status))
    except urllib.error.HTTPError as e:
        results.append((c, e.code, e.read()[:80]))
print(f"startup ok; token fetches={len(token_requests)}; answers={results}; upstream auth={upstream_auth}")
proc.terminate(); proc.wait(5)
