"""Step 1 of the method: a caption for each image (precomputed, BLIP-2 or a vision LLM).

captioners.py picks and runs a captioner (the captions stage); table.py reads the stage's output.
"""
