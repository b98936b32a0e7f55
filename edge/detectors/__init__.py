"""Face detectors behind one interface (base.Detector) returning edge.types.Detections."""
