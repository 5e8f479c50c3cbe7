"""Stage `adapt`: continued masked-LM pre-training of the teacher's encoder on unlabelled
domain text, shared by the encoder tasks (each hands over its own text, :mod:`.text`)."""
