"""Fleet deployment tests: deploy/kubernetes, deploy/prometheus, deploy/grafana, deploy/ansible
and the MQTT observer. Their helpers live in modules beside this file (fleet_support.py,
kustomize.py), which pytest puts on sys.path because this conftest.py is here."""
