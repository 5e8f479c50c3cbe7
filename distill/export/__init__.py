"""ONNX export shared by every task: export and parity helpers, quantization, the one gate,
and the bundle format (writer and the one verifying reader)."""
