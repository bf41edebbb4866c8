"""Fault-injection tests. The longest variants carry the ``soak`` marker: ``make test``
deselects them (``-m "not soak"``) and ``make soak`` runs them."""
