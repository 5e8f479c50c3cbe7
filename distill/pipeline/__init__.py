"""Running a recipe: the stages in order (skipping the fresh ones), the run folders and
manifests they leave, their locks and fingerprints, progress, process roles and the checks
before any compute."""
