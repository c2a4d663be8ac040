"""`kneeai app` behaves as one process to whoever manages it (issue 20).

A process manager (systemd, supervisord, Docker, `timeout`) starts `kneeai app` and later sends SIGTERM (or SIGINT) to
the PID it started. The Streamlit server must then be gone within 10 s: the port free, and no process of the server
left (the old `kneeai app` started the server as a child with `subprocess.call`; the child survived, re-parented to
PID 1, still holding the port). The server is started in a session of its own, so that every process it could have
left behind is in that session's process group."""
import os, signal, socket, subprocess, time
import pytest

pytest.importorskip('streamlit', reason='the app needs Streamlit: pip install "kneeai[app]"')
from conftest import kneeai_exe, free_port, wait_healthy

def _port_free(port:int) -> bool:
    "Whether a new server could listen on `port` (as Streamlit's does, with SO_REUSEADDR: the health checks' closed connections wait in TIME_WAIT)"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try: s.bind(('127.0.0.1', port)); s.listen()
        except OSError: return False
        return True

def _group_alive(pgid:int) -> bool:
    "Whether any process of process group `pgid` still exists (zombies of the group included)"
    try: os.killpg(pgid, 0)
    except ProcessLookupError: return False
    return True

@pytest.fixture(scope='module')
def model(tiny_models):
    return tiny_models['mrnet']

@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_signal_to_kneeai_app_stops_the_server(model, sig, tmp_path):
    port,log = free_port(),tmp_path/'server.log'
    cmd = [kneeai_exe(), 'app', '--model', str(model), '--server.port', str(port),
           '--server.address', '127.0.0.1', '--server.headless', 'true', '--server.fileWatcherType', 'none',
           '--browser.gatherUsageStats', 'false']
    with open(log, 'w') as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, 'KNEEAI_HOME': str(tmp_path/'home')})
    try:
        wait_healthy(f'http://127.0.0.1:{port}', proc, log)
        proc.send_signal(sig)  # to the process that was started, as a supervisor does: not to its group
        t0 = time.time()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: pytest.fail(f'`kneeai app` still runs 10 s after {sig.name}:\n{log.read_text()[-3000:]}')
        while (not _port_free(port) or _group_alive(proc.pid)) and time.time() - t0 < 10: time.sleep(0.2)
        assert _port_free(port), f'port {port} still taken 10 s after {sig.name}'
        assert not _group_alive(proc.pid), f'a process of the server is still running 10 s after {sig.name}'
    finally:
        if _group_alive(proc.pid): os.killpg(proc.pid, signal.SIGKILL)
