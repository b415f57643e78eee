"""One router per resource; `paddock.api.app` lists them."""
