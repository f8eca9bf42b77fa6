"""Train or fine-tune an STT classifier with the HF Trainer; the same as `stt-hf train`."""

import sys

from stt_hf.tasks.train import main

if __name__ == "__main__":
    main(sys.argv[1:])
