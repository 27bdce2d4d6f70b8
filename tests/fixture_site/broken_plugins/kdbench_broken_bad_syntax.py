"""A plugin with a syntax error (ruff and compileall skip this folder)."""

def forward_train(self, batch)
    return batch
