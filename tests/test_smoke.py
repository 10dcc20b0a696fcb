from tests.factories import get_batch


def test_make_batch_complete_reaches_qc_testing(app, make_batch, login):
    number = make_batch()
    with app.app_context():
        assert get_batch(number).state == "qc_testing"
    client = login("tech1")
    page = client.get(f"/batches/{number}")
    assert page.status_code == 200
    assert "qc testing" in page.get_data(as_text=True)
