"""Raw data read strictly and split, and the files the data stage hands on."""
