"""deltatune.classify: sequence classification (`recipe: cls`) on an encoder or a decoder.

    labels.py     label names <-> ids, found in data.train, saved as RUN_DIR/labels.json
    data.py       {text, label} records -> token ids + label ids (errors name file:line)
    model.py      the backbone (encoder or causal LM), pooling, the K-way head, logits
    names.py      a method's Llama-style default module names translated for BERT-style encoders
    objective.py  cross-entropy over rows as the training loop's Objective
    metrics.py    accuracy, macro-F1, the majority-class rate, per-label numbers
    predictor.py  `Classifier.load(run_dir).predict(texts)`: generate, serve and tests use it

The head is a fresh `nn.Linear(hidden, K)` (deltatune.models.heads) that always trains beside
whatever method the config names; the forward path is `deltatune.forward.decoder_hidden` for
both kinds (a bare encoder is its own stack), so every method computes where it is installed.
"""
