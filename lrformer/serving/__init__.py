"""``lrformer serve``: a local web page and HTTP API around a loaded model (needs ``lrformer[serve]``)."""
