"""``python -m bloodseg.weights``: list the shipped models (name, size, model card title)."""

from bloodseg.weights import listing

if __name__ == "__main__":
    print(listing())
