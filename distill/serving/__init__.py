"""An exported bundle served, torch-free: its tokenizer and onnxruntime session, the input and
output lines of distill predict, the serving verbs' arguments."""
